import { lazy, Suspense } from "react";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { createBrowserRouter, Navigate, RouterProvider } from "react-router";
import { Layout } from "./components/Layout";
import { RequireAuth } from "./components/RequireAuth";
import { Loading } from "./components/States";
import { LoginPage } from "./pages/LoginPage";
import { FileListPage } from "./pages/FileListPage";
import { NotFoundPage } from "./pages/NotFoundPage";

// The create and detail screens load on first use: the list and the login
// stay in the initial bundle.
const loadCreate = () => import("./pages/CreateFilePage");
const loadDetail = () => import("./pages/FileDetailPage");
const CreateFilePage = lazy(loadCreate);
const FileDetailPage = lazy(loadDetail);

// Opened straight on one of them, fetch its code while the session is
// restored instead of after.
if (typeof location !== "undefined") {
  if (location.pathname === "/files/new") void loadCreate();
  else if (location.pathname.startsWith("/files/")) void loadDetail();
}

const queryClient = new QueryClient({
  defaultOptions: {
    queries: { staleTime: 5_000, refetchOnWindowFocus: true, retry: 1 },
  },
});

const router = createBrowserRouter([
  { path: "/login", element: <LoginPage /> },
  {
    element: (
      <RequireAuth>
        <Layout />
      </RequireAuth>
    ),
    children: [
      { index: true, element: <Navigate to="/files" replace /> },
      { path: "files", element: <FileListPage /> },
      {
        path: "files/new",
        element: (
          <Suspense fallback={<Loading />}>
            <CreateFilePage />
          </Suspense>
        ),
      },
      {
        path: "files/:id",
        element: (
          <Suspense fallback={<Loading />}>
            <FileDetailPage />
          </Suspense>
        ),
      },
      { path: "*", element: <NotFoundPage /> },
    ],
  },
]);

export function App() {
  return (
    <QueryClientProvider client={queryClient}>
      <RouterProvider router={router} />
    </QueryClientProvider>
  );
}
