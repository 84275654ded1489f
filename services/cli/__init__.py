"""The commands that start or change the services: ``trainforge serve`` (the embedded server),
``trainforge db`` (job-store migrations) and ``trainforge tokens`` (team API tokens).

They live beside what they run; the kernel's command line (trainforge/cli/) mounts them through
the ``trainforge.cli`` entry-point group (pyproject.toml), so it never imports this package.
"""
