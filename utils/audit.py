"""``python -m utils.audit`` runs ``python -m utils.knowledge.audit`` (the command's name before utils/ had rooms)."""

import runpy

if __name__ == "__main__":
    runpy.run_module("utils.knowledge.audit", run_name="__main__", alter_sys=True)
