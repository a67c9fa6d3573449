"""Data: generated phantoms now; fastMRI files and packaged anatomy later."""
