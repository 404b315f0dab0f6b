"""A suite: every task x seed x start of a list of labelled tasks finetuned as its own run, read back into one
table (issue 30).

spec.py reads a suite (conf/suite/<name>.yaml as plain values) and turns its tasks into launch.py overrides;
starts.py reads the starts (`scratch`, `run:<name>[@best|last|step<N>]`, `hf:<folder>`); jobs.py lists the
jobs with their folders and whether each has finished; table.py reads the finished jobs' results.json into
suite.csv, suite.md and the plots. The Hydra side (a sweeper that launches the jobs) is
launcher/suite_sweeper.py; nothing here imports Hydra.
"""
