from fusion_lab.cli import main

main()
