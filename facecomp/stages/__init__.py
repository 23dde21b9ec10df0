"""The stages an image goes through, one module each behind a small interface: detect (MTCNN,
mtcnn), align, translate, occlusion, blend (paste back), and what video and --age add between
them (track, steady, age, target).
"""
