"""LlamaIndex subclasses and clients for services outside the project: HF, Ollama, llama.cpp, ONNX models, Milvus, SQLite."""
