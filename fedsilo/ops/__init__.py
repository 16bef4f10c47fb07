"""Reading what federations leave: status, reports, the privacy spent, evaluation, onboarding."""
