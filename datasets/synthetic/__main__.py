"""``python -m datasets.synthetic ...``: the cohort CLI (see datasets/synthetic/cohort.py)."""

from datasets.synthetic.cohort import get_args_parser, main

main(get_args_parser().parse_args())
