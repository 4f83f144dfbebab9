"""The job: stages in curriculum rounds, their markers, the report."""
