"""Sources and targets: how Baton reads legacy data and writes the cloud product's."""
