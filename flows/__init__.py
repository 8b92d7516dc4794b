"""Prefect flows and the command line: thin wiring over ``pipeline`` (no statistics here).

- ``flows.study``: the flows ``growth_study`` (one study: load -> validate ->
  reshape -> analyse -> report -> write outputs) and ``growth_studies`` (several
  studies in parallel);
- ``flows.cli``: the ``growth`` command (``main``);
- ``flows.serve``: deployments of the scheduled studies (``growth serve``);
- ``flows.params``: run parameters (pydantic) and config overrides;
- ``flows.context``: the report's input and the manifest's facts from the stages' results;
- ``flows.artifacts``: the Prefect artifacts of a run;
- ``flows.settings``: Prefect's quiet defaults, applied before Prefect is imported;
- ``flows.tempserver``: the temporary Prefect server of a run, which dies with it
  (``flows.tempserver_process``: the server's own process);
- ``flows.cache``: the private folder of cached fits, and who wrote them.

Importing this package does not import Prefect.
"""
