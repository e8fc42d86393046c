"""The paper layer: `replication/papers/<paper>/<topic>.py` belongs to experiment, stage and notebook
`<paper>_<topic>` and holds its run list (`runs`), tables, claims and plots. What a topic module may
define, and how its runs are swept, is described in `replication.experiments`; each paper's claims live
in `<paper>/ledger.yaml`.
"""
