"""The performance benchmark: the installed `flux-klein-mcp` beside its floors, as ratios measured in one run.

    python -m bench [--rounds N | --quick] [--json PATH] [--check]

See bench/README.md for what each figure measures.
"""
