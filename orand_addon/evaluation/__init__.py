"""Evaluation against ground truth (DESIGN §8).

* :mod:`.functional` — pure counting and scores: :func:`~.functional.confusion_matrix`,
  :func:`~.functional.segmentation_scores`, the streaming :class:`~.functional.ConfusionAccumulator` and
  :class:`~.functional.ThresholdSweep`, and the threshold rules.
* :mod:`.predictions` — what can be scored (store kinds, CAM folders, label PNG folders) and the ground truth.
* :mod:`.evaluate` — the streaming shell :func:`~.evaluate.evaluate` returning an :class:`~.evaluate.EvalResult`.
* :mod:`.results` — terminal table, JSON / CSV files and the baseline gate.
* :mod:`.report` — the visual report (matplotlib, optional extra ``plot``).
"""
