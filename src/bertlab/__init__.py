"""bertlab: pretrain BERT-style encoders with masked-language modelling and finetune them for classification."""

__version__ = "0.1.0"
