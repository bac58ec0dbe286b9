"""The closed loop: policies that turn alerts into retraining, gates, canaries and
promotions (or rollbacks), every step recorded."""
