from flux_klein_mcp.cli import main

main()
