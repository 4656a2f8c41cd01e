"""Protocol peers only the tests and benchmarks start (etcd, a Redfish emulator, a
serial device); the product's simulated devices are in :mod:`hafence.simdevices`."""
