"""hafence lab: a real hafence cluster on one Linux machine, and chaos to prove it safe.

One module per job:

- :mod:`~hafence.lab.layout`: names, addresses and paths of one lab;
- :mod:`~hafence.lab.timings`: the timing presets (``fast``, ``pve``);
- :mod:`~hafence.lab.network`: bridge, namespaces, cables, partitions and lossy links;
- :mod:`~hafence.lab.etcd`: the etcd members, one per node;
- :mod:`~hafence.lab.bmc` and :mod:`~hafence.lab.switch`: the fence devices (ipmi_sim,
  snmpsim);
- :mod:`~hafence.lab.node`: a node's processes - boot, daemons, death;
- :mod:`~hafence.lab.physics`: power, watchdog expiry and switch ports acting on nodes;
- :mod:`~hafence.lab.faults`: the faults and their healing;
- :mod:`~hafence.lab.events`: the physics log;
- :mod:`~hafence.lab.supervisor`: the process that owns a running lab;
- :mod:`~hafence.lab.control`: the lab from outside (``Lab``: up, down, fault, status);
- :mod:`~hafence.lab.cleanup`: removing every trace, also after a crash;
- :mod:`~hafence.lab.checker` and :mod:`~hafence.lab.chaos`: random fault schedules
  and the judge.

See docs/lab.md.
"""
