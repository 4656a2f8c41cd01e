"""pytest plugin shipped with hafence (conformance kit; see issue 5)."""
