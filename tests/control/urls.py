"""A URLconf whose admin site offers the control actions on the executions list.

The project's ``admin.site`` gets them when the lead wires ``EXECUTION_ACTIONS`` into ``ExecutionAdmin``;
this site does the same with a subclass, so that the tests do not depend on the order in which the
project's URLconf and the control module were imported.
"""

from django.contrib import admin
from django.urls import path

from django_workers.admin import ExecutionAdmin, NodeAdmin
from django_workers.admin.control import EXECUTION_ACTIONS, ControlRequestAdmin, has_control_workers_permission
from django_workers.models import ControlRequest, Execution, Node


class ControlledExecutionAdmin(ExecutionAdmin):
    actions = EXECUTION_ACTIONS
    has_control_workers_permission = has_control_workers_permission


site = admin.AdminSite(name="admin")
site.register(Execution, ControlledExecutionAdmin)
site.register(Node, NodeAdmin)
site.register(ControlRequest, ControlRequestAdmin)

urlpatterns = [path("admin/", site.urls)]
