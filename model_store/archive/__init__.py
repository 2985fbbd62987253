"""Whole archives: the evaluation and the shortcut audit as an Apache Beam pipeline, on the
local runner across this machine's cores or on Dataflow. The same rows as the single-process
tools (model_store.evaluation), made by a RunInference ModelHandler that loads the LiteRT
artifacts once per worker; the same summary and report. Runs in `.venv-beam` (make beam):
`python -m model_store.evaluate ... --runner direct|dataflow` starts it there."""
