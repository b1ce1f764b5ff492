"""Preprocess MIMIC-IV-ECG for pre-training (paper Sec. 4.1; docs/preprocessing.md).

    python mimic_preprocess.py --dataset_path <path_to_MIMIC_data> --output_path datasets/ecg_datasets/MIMIC-IV

The logic lives in ``datasets/preprocess/mimic.py``; see docs/preprocessing.md.
"""

from datasets.preprocess.mimic import main

if __name__ == "__main__":
    main()
