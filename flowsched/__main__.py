from flowsched.cli.main import main

main()
