"""``python -m utils.tiny_base`` runs ``python -m utils.model.tiny_base`` (the command's name before utils/ had
rooms)."""

import runpy

if __name__ == "__main__":
    runpy.run_module("utils.model.tiny_base", run_name="__main__", alter_sys=True)
