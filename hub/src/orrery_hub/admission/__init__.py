"""What a job must pass before it is stored: deliverable as a wire order
(``deliverable``), and the policies in force (``gate``, with the policy files read by
``policyfiles`` and the spend and usage from ``usage``)."""
