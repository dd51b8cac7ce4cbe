"""Pure decisions of the EcrRepository controller: what AWS should hold, the calls that get it there, and
what the object's status and Events then say.

Nothing here does I/O or knows kopf. The controller observes AWS through the adapters, calls these
functions, executes the returned actions in order, and writes the status these functions compute. Every
comparison is semantic (tags as mappings, policies parsed and normalised) so a converged repository plans
no action, and an empty plan is the common case.

One module per seam, imported by its own path (this file exports nothing): ``vocabulary`` (reasons, owned
tags, derived names), ``observed`` (what AWS holds), ``desired`` (spec -> AWS terms, refusals), ``actions``,
``plan``, ``identity_policies``, ``deletion``, ``failures`` (AWS error classification), ``status`` (status
and Events).
"""
