"""Make executed notebooks small enough to keep in git.

Run after executing them::

    jupyter nbconvert --to notebook --execute --inplace notebooks/0*.ipynb
    python notebooks/slim_outputs.py notebooks/0*.ipynb

It drops the inline BokehJS/Panel bundles that ``tomolab.viz.setup_notebook()``
prints (megabytes per notebook; they are sent again whenever the notebook runs)
and widget state over 1 MB (the 3-D view's voxels; the widget outputs of such a
notebook then keep their text form). Printed results, tables and the small
widget states stay.
"""

import json
import sys

import nbformat

BUNDLES = {"application/javascript", "application/vnd.holoviews_load.v0+json"}
MAX_WIDGET_STATE = 1_000_000
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def slim(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs
                            if not (BUNDLES & set(o.get("data") or {})
                                    and len(json.dumps(o["data"])) > 20_000)]
    if len(json.dumps(nb.metadata.get("widgets", {}))) > MAX_WIDGET_STATE:
        del nb.metadata["widgets"]
    if "widgets" not in nb.metadata:
        # without the saved state a widget view would read "Error displaying widget: model not
        # found" until the cell runs again: keep its text form instead
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                (output.get("data") or {}).pop(WIDGET_VIEW, None)
    nbformat.write(nb, path)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        slim(name)
