from facerestore_cli.cli import main

main()
