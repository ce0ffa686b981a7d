"""Feature extraction from video files: the I3D network (i3d.py), decoding and the network
inputs (frames.py, OpenCV), the extractor (extract.py) and the record of how a folder of
features was made (provenance.py, the only part the training data loader reads). Importing the
package imports nothing heavy."""
