"""The ``orrery`` command (typer + rich). ``hub`` and ``spoke`` come from the orrery-hub and
orrery-spoke-agent distributions through the ``orrery.commands`` entry point group."""
