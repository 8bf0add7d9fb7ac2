"""Interactive explorers for the notebooks: default boxes, matching, augmentation, detection, any plot.

An explorer owns ONE matplotlib figure and a few named ipywidgets controls. Moving a control
calls ``explorer.update(name=value)``, a plain method that redraws the figure in place and
returns a small summary dict of what is drawn; the tests drive the explorers by calling it
directly (or by setting ``explorer.controls[name].value``, which calls it through the observer).
The figure is a bare ``matplotlib.figure.Figure`` (Agg canvas, not registered with pyplot), so it
is never shown twice by ``%matplotlib inline`` and ``plt.close("all")`` does not touch it; inside a
Jupyter kernel it is rendered to PNG into one persistent ``ipywidgets.Image`` (``explorer.view``)
after every change, which needs no ipympl. No ``ipywidgets.Output``: headless runners (nbclient, so
the tests and the HTML build) intermittently wait a whole cell timeout on output captured into an
Output widget (jupyter/nbclient#312), and an Image's last PNG is stored with the widget state, so a
static HTML page shows it. In grading mode (``ssd_lib.course.modes.grading_mode()``) ``display()``
shows nothing.

One module per explorer, named after what it shows; ``base`` holds what they share::

    base.py           the _Explorer base, input validators, image loading, the image-panel helper
    default_boxes.py  DefaultBoxExplorer    lesson 2: the default boxes of one cell (Sec. 2.2)
    matching.py       MatchingExplorer      lesson 3: which default boxes match each object
    augmentation.py   AugmentationExplorer  lesson 6: the training augmentation step by step
    detection.py      DetectionExplorer     lesson 8: score threshold, NMS, top-k
    plot.py           PlotExplorer          any draw(ax, **values) function (instead of ``interact``)

Usage::

    from ssd_lib.course.widgets import DefaultBoxExplorer
    explorer = DefaultBoxExplorer()              # SSD300's 8732 default boxes
    explorer.display()                           # controls + figure (nothing in grading mode)
    explorer.update(map_index=2, row=4, col=7)   # -> {"boxes_per_cell": 6, "num_boxes": 6, ...}
"""
from ssd_lib.course.widgets.augmentation import AugmentationExplorer
from ssd_lib.course.widgets.default_boxes import DefaultBoxExplorer
from ssd_lib.course.widgets.detection import DetectionExplorer
from ssd_lib.course.widgets.matching import MatchingExplorer
from ssd_lib.course.widgets.plot import PlotExplorer

__all__ = ["DefaultBoxExplorer", "MatchingExplorer", "AugmentationExplorer", "DetectionExplorer", "PlotExplorer"]
