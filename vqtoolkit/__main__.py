from vqtoolkit.cli import main

main()
