from django.shortcuts import render


def home(request):
    return render(request, "index.html", {"message": "Hello from Django",
                                          "script_name": request.META.get("SCRIPT_NAME", "")})
