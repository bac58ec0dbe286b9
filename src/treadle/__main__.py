from treadle.cli.app import main

main()
