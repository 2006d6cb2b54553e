from refundflow_cli.main import main

main()
