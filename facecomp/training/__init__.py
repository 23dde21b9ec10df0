"""Making models: the data-folder contract (dataset), prepare (photos -> aligned crops), the
CycleGAN training (train) and the age estimator's (age_train).
"""
