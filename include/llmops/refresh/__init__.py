"""model_refresh decisions: which artefact versions to build (`plan`) and what became of each (`report`)."""
