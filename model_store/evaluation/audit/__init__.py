"""The shortcut audit: artefacts drawn off the lesion (`artefacts`, `lesion`), each image
through all of them (`probe`), the figures and verdicts (`figures`), the report (`report`),
the command (`cli`, `python -m model_store.audit`)."""
