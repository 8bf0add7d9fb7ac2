"""ssd_lib.course: everything that exists to teach, grade or publish the course (the ``course`` extra).

It sits on top of the SSD library and only calls it; nothing in ``ssd_lib`` outside this package
imports it (a test walks the imports). By what the course does:

==================  ==========================================================================
``modes``           fast / grading mode: the only place that reads the ``SSD_COURSE_*`` variables
``assets``          the shipped model and its card, the notebooks' folder, :func:`load_course_model`
``checks``          the exercise checkers, one module per lesson, on a small shared harness
``widgets``         the interactive explorers of lessons 1-3, 6, 8, one module each, one drawing helper
``lab``             lesson 11's broken pieces (their fixed twins are the library's own functions)
``ablations``       lesson 10's runner of the paper's ablations
``student``         student versions of the notebooks, in nbgrader's format
``grade``           the autograder (``python -m ssd_lib grade``)
``site``            the static HTML site (``python -m ssd_lib html``)
``doctor``          the environment check (``python -m ssd_lib doctor``)
``model_card``      ships a trained model to ``assets/`` with its measured card
==================  ==========================================================================

Usage::

    from ssd_lib.course.modes import fast_mode, grading_mode
    from ssd_lib.course.checks import check_iou
    python -m ssd_lib.course student [--check]
"""
