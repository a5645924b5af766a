"""Reference networks, NAS spaces, micro-benchmarks, TFLite conversion and the
.tflite graph reader (the reader needs no TensorFlow)."""
