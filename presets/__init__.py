"""Method presets (YAML data), installed as the package `facerestore_cli.presets`."""
