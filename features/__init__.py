"""Where features come from. Extracted from video files: the I3D network (i3d.py), decoding and
the network inputs (frames.py, OpenCV), the extractor (extract.py), a dataset from videos and a
label file (dataset_builder.py), toy videos for trying it (toy_videos.py), and the record of how
a folder of features was made (provenance.py, the only part the training data loader reads).
Generated: I3D-like features of a known timeline (synthetic.py, for tests and the demo).
Importing the package imports nothing heavy."""
