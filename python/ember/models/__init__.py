"""Model builders: emit standard ONNX graphs from checkpoint folders (no torch at run time).

bert_onnx: a BERT encoder (HF config.json + model.safetensors, sentence-transformers pooling).
"""
