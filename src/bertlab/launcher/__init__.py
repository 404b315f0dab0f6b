"""The launcher edge: what needs Hydra's runtime, used by launch.py and conf/config.yaml only.

- registration.py: the structured-config schemas and the `${bertlab.*:...}` resolvers, before composing.
- run_folder_guard.py: the Hydra callback that checks a launch's folder before Hydra writes into it, and
  undoing what a launch refused by a check wrote.
- sweep_callbacks.py: Ctrl-C ends a sweep; the sweep summary kept up to date as jobs end.

Nothing in the library imports this package.
"""
