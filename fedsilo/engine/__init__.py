"""Running federations: the process and MPI engines, the deployed services, process tuning.

``federation`` holds what every engine shares (the app, the exchange, the run folder, the
first model, the final files); ``process_engine`` and ``mpi_engine`` host hospitals in
worker processes or MPI ranks; ``services`` is what the ECS tasks run and never imports an
engine.
"""
