from compare.app.cli import main

main()
