"""Calibration on the user's own photographs: what an answer may claim (model_store.calibrate).
`fit` holds the figures, `cli` the command, `report` what it writes; serving reads the block
with dermcam.trust."""
