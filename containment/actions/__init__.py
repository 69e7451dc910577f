"""Importing this package registers every containment action, one module per step.

Import order is registration order, which `actions_for` keeps where dependencies allow:
it is the order of AWS's ContainEC2 procedure.
"""
# ruff: noqa: F401, I001

from containment.actions import capture
from containment.actions import evidence
from containment.actions import volatile
from containment.actions import protect
from containment.actions import snapshot
from containment.actions import autoscaling
from containment.actions import load_balancers
from containment.actions import isolation_groups
from containment.actions import isolate
from containment.actions import iam_instance
from containment.actions import tag
from containment.actions import access_key
from containment.actions import flow_logs
from containment.actions import iam_user
from containment.actions import iam_role
from containment.actions import s3_bucket
from containment.actions import lambda_function
from containment.actions import rds_instance
