from forensix.cli.main import main

main()
