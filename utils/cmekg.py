"""``python -m utils.cmekg`` runs ``python -m utils.knowledge.cmekg`` (the command's name before utils/ had rooms)."""

import runpy

if __name__ == "__main__":
    runpy.run_module("utils.knowledge.cmekg", run_name="__main__", alter_sys=True)
