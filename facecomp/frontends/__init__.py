"""The front ends, thin layers over the Python API: the command line (cli), photos and folders of
them (photo), video (video, with its containers and encode helpers) and the --debug drawing.
"""
