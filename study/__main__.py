from study.cli.app import entry

entry()
