"""reid_eval: evaluation of video person re-ID models on the video re-ID benchmarks.

Supported: MARS, LS-VID, iLIDS-VID, PRID-2011 and DukeMTMC-VideoReID.
"""
