# CrmTask lives here (see the CRM issue).
