"""Serving many clients, from one process or several replicas, over HTTP (`serve --http`).

    secret.py    the secret every replica shares (FLUX_KLEIN_HTTP_SECRET), or one this process makes for itself
    sessions.py  what a 2025-era client said at `initialize`, sealed into its session id: any replica reads it back
    legacy.py    the SDK's stateless session manager, serving those clients with what they said
    asking.py    asking a 2025-era client mid-call over its call's response stream; answers reach the asker
                 whichever replica they arrive at
    shared.py    what replicas share beside the ledger: approvals already used, answers on their way
    once.py      an approval given in a 2026-07-28 input round pays for one call, whichever replica continues it
    limits.py    connection caps and read timeouts: idle or slow peers cannot starve the server
"""
