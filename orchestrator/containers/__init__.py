"""Apptainer images: command lines, per-site plans, image identity, deployment and pre-flight.

The worker-side halves (starting a code in the image, the probe, the deployment task) live in
``orchestrator.apps`` because they run on the sites.
"""
